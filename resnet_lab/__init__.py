"""resnet_lab: residual networks on CIFAR-10, as a library, a CLI and (in app/) an explorer.

Import what you need from the submodules: ``resnet_lab.data``, ``resnet_lab.models``,
``resnet_lab.training``, ``resnet_lab.runs``. This package never imports streamlit.
"""

__version__ = "0.1.0"
