from src.datamodules.image_classification import ImageClassificationDataModule

__all__ = ["ImageClassificationDataModule"]
