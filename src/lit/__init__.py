from src.lit.classifier import ClassifierModule

__all__ = ["ClassifierModule"]
