"""The review studio: a web app where merchandisers judge, fix and approve a batch's pictures."""
