"""The contact sheet's bulk forms start empty: a threshold is typed, never carried over."""

from __future__ import annotations

import re

import pytest

from tests.unit.review_studio import ADMIN, login


def threshold_inputs(html: str, form_id: str) -> list[str]:
    form = re.search(rf'<form id="{form_id}".*?</form>', html, re.S).group(0)
    return re.findall(r'<input[^>]*name="threshold"[^>]*>', form)


@pytest.mark.parametrize("query", ["filter=below&below=0", "below=0.3", "", "filter=below"])
@pytest.mark.parametrize("form_id", ["bulk-regenerate-form", "bulk-approve-form"])
def test_bulk_thresholds_are_required_and_have_no_value_whatever_the_filter(studio, query, form_id):
    login(studio, ADMIN)
    page = studio.client.get(f"/batches/b1?{query}").text
    (field,) = threshold_inputs(page, form_id)
    assert "required" in field
    assert "value=" not in field
    if "below=" in query:  # the filter's own threshold still shows in the filter
        below = re.search(r'<input[^>]*name="below"[^>]*>', page).group(0)
        assert 'value="0' in below
