"""pytest settings shared by the unit tests and the notebooks (nbval)."""


def pytest_collection_modifyitems(items):
    # nbval drains a cell's outputs with a fixed 5-second wait between messages; a busy machine can
    # take longer to deliver them after a long training cell, so give it a minute.
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = 60
