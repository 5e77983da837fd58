"""How good and how fast: error metrics of model frames against DFT frames (``metrics``, command ``compare``),
the ``parity`` stage, the ``accuracy`` and ``performance`` benchmarks."""
