"""The code MLflow runs to load a Tailor model (MLflow's "models from code").

Logged as the model's python_model instead of a pickled object: loading imports the installed
tailor_trainer by name, so nothing depends on the pickle format of the Python that saved it.
"""

from mlflow.models import set_model

from tailor_trainer.mlflow_model import TailorModel

set_model(TailorModel())
