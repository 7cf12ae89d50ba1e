"""Taking a run out of the studio: merged weights, GGUF, Ollama, vLLM."""
from studio.export.formats import (DEFAULT_QUANT, FORMATS, QUANTS, ExportError, ExportResult,
                                   estimate, export_run)

__all__ = ["DEFAULT_QUANT", "FORMATS", "QUANTS", "ExportError", "ExportResult", "estimate",
           "export_run"]
