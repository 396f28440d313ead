"""Live views of a running guest: what `kvm_stat` and `top` show of a VM, for emu's own machine.

- sampler.py: snapshots of the machine's cumulative counters (exits by reason, instructions,
  TLB fills, interrupts, guest and idle time), read safely from another thread, and their history;
- cputime.py: the emulator's CPU time from /proc, split into guest, emulator user and system,
  idle and the host's steal, as top and mpstat split it;
- rates.py: rates between two snapshots and the text that shows them;
- top.py: `python -m emu top`, the view of another emu through its monitor socket;
- png.py and plot.py: a PNG of the rates over the run (`--plot FILE.png`), with no dependency.

`--stats live` prints the rates to stderr every interval; the monitor's `info stats json` gives
one snapshot, which is how `emu top` reads them across processes.
"""

from .plot import write_plot
from .sampler import Sampler, snapshot

__all__ = ["Sampler", "snapshot", "write_plot"]
