"""``python -m lmcot.report DIR...``: :func:`lmcot.report.main`."""

from lmcot.report import main

if __name__ == "__main__":
    main()
