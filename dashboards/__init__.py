"""The deeppcos dashboard (Streamlit): ``deeppcos dashboard [RUN]`` runs ``dashboards/app.py``.

This folder imports the library, never the other way round. The modules without Streamlit
(``runinfo``, ``analysis``, ``figures``) hold the logic and are tested directly; the page scripts
in ``views/`` only lay it out. Importing this package is light (nothing is imported here).
"""
