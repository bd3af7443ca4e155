"""The embedded PostgreSQL and Kafka-protocol broker that `make run` and the tests start."""
