"""Plain ``nn.Module`` classifiers. They know nothing of Hydra or Lightning: each takes
``in_channels``, ``num_classes`` and an activation factory (``act_layer``)."""
from src.models.activations import activation_factory, as_factory, available_activations
from src.models.lenet import LeNet5
from src.models.resnet import ResNet18
from src.models.cifar_resnet import CifarResNet
from src.models.densenet import DenseNetBC
from src.models.fcn import FCN
from src.models.mobilenetv2 import MobileNetV2
from src.models.pyramidnet import PyramidNet
from src.models.shakedrop import ShakeDrop, ShakeDropFunction
from src.models.shufflenetv2 import ShuffleNetV2
from src.models.simple_cnn import SimpleCNN
from src.models.squeezenet import SqueezeNet
from src.models.vgg import VGG
from src.models.wide_resnet import WideResNet

__all__ = [
    "LeNet5",
    "ResNet18",
    "activation_factory",
    "as_factory",
    "available_activations",
    "CifarResNet",
    "DenseNetBC",
    "FCN",
    "MobileNetV2",
    "PyramidNet",
    "ShakeDrop",
    "ShakeDropFunction",
    "ShuffleNetV2",
    "SimpleCNN",
    "SqueezeNet",
    "VGG",
    "WideResNet",
]

from src.models.deep_plain import DeepCNN, DeepMLP  # noqa: E402  (plain deep nets: the depth study)

__all__ += ["DeepCNN", "DeepMLP"]
