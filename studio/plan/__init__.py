"""How a run is laid out before it starts: the machine found (hardware.py), the memory estimate
and the GPU batch planner (memory.py), and the presets that fill what a person left unset
(presets.py)."""
