"""Root conftest: pytester for the plugin's own tests.

The plugin itself loads through its ``pytest11`` entry point once the package is
installed (``pip install -e .``), or with ``-p pytest_llmperf`` from a checkout.
"""

pytest_plugins = ["pytester"]
