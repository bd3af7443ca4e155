"""Running a workflow: the step runner, the run-scoped emitter, and the workflow's steps."""
