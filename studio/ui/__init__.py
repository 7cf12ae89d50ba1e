"""The studio in the browser (Gradio): one module per tab, the app that joins them, and the
server-side state they share. Only this package imports gradio; the engine never does."""
