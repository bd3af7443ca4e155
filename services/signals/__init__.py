"""The signals service: runs `ibkr_trading_signal_workflow` for each `RunRequested`."""
