"""Names and paths the Modal app, its containers and the launcher must agree on."""

CONTAINER_HOME = "/coral-home"  # the Volume's mount point; CORAL_HOME in every container
MODELS_HOME = "/coral-models"  # the models Volume's mount point; HF_HOME is under it
CONTAINER_REPO = "/root"  # coral/, data/ and configs/ land here (REPO_ROOT in the container)
SECTION_ENV = "CORAL_MODAL_SECTION"  # the `modal` section as JSON, read by coral.modal.app
CONFIG_ENV = "CORAL_MODAL_CONFIG"  # or a config file path, read by coral.modal.app
CONTAINERS_DICT = "containers"  # worker id -> what its call is doing (`coral modal status`)
EVALUATE_FUNCTION = "evaluate"  # where test jobs' candidates run: no network, no Modal access
