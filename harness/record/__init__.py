"""The results folder as a contract: every number's definition (metrics), the typed record every
reader checks (schema), atomic writes and record states (results), one trainer per cell (locks),
and the one fault-injection switch (faults). Plain Python: no torch, no pandas; every other stage
may import it, it imports none of them."""
