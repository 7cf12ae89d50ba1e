"""The studio's one set of actions on runs (actions.py), the paths each service takes
(paths.py: any, or only the page's folders), its refusals (errors.py), and who may reach a
served studio and what it may touch (access.py)."""
