"""``repvit-sam serve``: a web page to segment images by clicking, over a small JSON API.

Needs the ``serve`` extra (``pip install 'repvit-sam[serve]'``). :func:`create_app` lives in
:mod:`repvit_sam.serve.app`; it is not imported here so that the package stays light.
"""
