"""Everything about the official EP code: its heads converted to probes of this library (`conversion`), which
backbone each released head was trained on and where the same weights and tokens are found here (`mapping`), and
the import of the authors' release as probe repositories (`release`)."""
