"""Image-classification studies: models, data modules and one LightningModule, composed by Hydra."""
