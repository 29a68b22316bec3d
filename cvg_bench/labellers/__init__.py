"""Labellers: plugins that say which label y of a prompt's label set Y a video shows.

They label training videos for CVG's classifier (``data.source=generate``, and the synthetic
share of ``data.source=render``). They are a plugin kind of their own, apart from the scorers:
the judge never trains the contestant, so nothing an evaluation scorer computes reaches the
classifier (tests/test_cvg_sources.py checks that the classifier's path imports no scorer and
not the shapes oracle).
"""
