"""Training: collectives, the objective, the LightningModule, the data module, callbacks and assembly."""
