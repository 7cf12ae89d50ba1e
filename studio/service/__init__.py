"""The studio's one set of actions on runs (actions.py), the page's confined version of it
(confined.py), and who may reach a served studio and what it may touch (access.py)."""
