from src.datamodules.build import build_datamodule
from src.datamodules.image_classification import ImageClassificationDataModule

__all__ = ["ImageClassificationDataModule", "build_datamodule"]
