"""The model file of an exported MLflow pyfunc ("models from code": no pickled Python object).

MLflow copies this file into the model folder and runs it when the model is loaded; it names the
:class:`headrace.bridges.pyfunc.HeadracePyfunc` that loads the headrace artifact shipped beside it.
"""

from mlflow.models import set_model

from headrace.bridges.pyfunc import HeadracePyfunc

__all__: list[str] = []

set_model(HeadracePyfunc())
