import pytest

from herbscan.errors import ParameterError, check_choice, check_range


def test_range_errors_read_as_sentences():
    with pytest.raises(ParameterError, match=r"^workers must be at least 1; got 0$"):
        check_range("workers", 0, 1)
    with pytest.raises(ParameterError, match=r"^lr must be more than 0; got 0$"):
        check_range("lr", 0, 0, low_open=True)
    with pytest.raises(ParameterError, match=r"^min_name_score must be in \[0, 100\]; got 120$"):
        check_range("min_name_score", 120, 0, 100)
    check_range("workers", 1, 1)  # the bound itself is allowed


def test_choice_errors_list_the_choices():
    with pytest.raises(ParameterError, match="layout must be one of 'sheet', 'label'; got 'x'"):
        check_choice("layout", "x", ("sheet", "label"))
