"""Running the command line in-process from tests."""

from scoresde.cli import main


def run(argv, capsys):
    """Run ``scoresde`` with ``argv`` in this process; returns ``(exit status, stdout, stderr)``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
