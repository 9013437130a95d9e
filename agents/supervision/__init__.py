"""What the supervisor daemon and the optimization server's manual trigger share: the monitored agents' configuration,
their durable trip state, and the intervention log in MLflow."""
