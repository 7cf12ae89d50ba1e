"""Runs: their folders and the jobs that train them (jobs.py), the one stream of training events
(events.py), runs summed up and compared (history.py), trackers that listen to the events
(tracking.py), and runs spread over several processes (torchrun.py)."""
