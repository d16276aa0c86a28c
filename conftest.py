"""pytest settings shared by the unit tests and the notebooks (nbval)."""


def pytest_collection_modifyitems(items):
    # nbval drains a cell's outputs with a fixed 5-second wait between messages. On a loaded machine
    # (a second CPU-bound job: 10x slower and more) a long training cell can be silent for minutes,
    # so wait up to 10 minutes; a hung cell is still caught, by nbval's own cell timeout (2000 s).
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = 600
