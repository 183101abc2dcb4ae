"""Load MathJax on every page, not only on pages with equations of their own.

Chapter titles contain math, and the navigation sidebar shows them on every page (the
bibliography, the index, search), so every page needs MathJax to typeset them.
"""


def setup(app):
    app.set_html_assets_policy("always")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
