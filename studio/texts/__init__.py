"""What the studio says, in English and Chinese side by side: engine messages and field help.

The engine writes a message as `Text(key, **values)`: an English `str` (what the command line,
logs and run files show) that keeps its key and values, so the page can say it again in the
reader's language with `localise`. The catalogs are split by who speaks: data errors, refusals,
advice and plan notes, field help. The page's own texts (tabs, buttons) stay in studio/ui/i18n.py.
"""
