"""CORAL: evolve LoRA adapters and generation knobs for a code-repair LLM.

The core library. It never imports Streamlit: the dashboard, CLI, workers, Modal app and
notebooks are thin shells over these modules.
"""

__version__ = "0.1.0"
