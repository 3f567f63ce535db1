from abdus import taxonomy as tx


def test_counts_match_the_paper():
    assert tx.NUM_VIEWS == 11
    assert len(tx.TASKS) == 5
    assert tx.NUM_LANDMARKS == 14
    assert len(tx.MEASUREMENTS) == 7


def test_view_order_is_the_model_format():
    assert tx.VIEW_NAMES[0] == "others"
    assert tx.VIEW_NAMES[5] == "kidney_right_long"
    assert tx.VIEW_NAMES[10] == "spleen_trans"
    assert [v.index for v in tx.VIEWS] == list(range(11))


def test_left_and_right_kidney_share_tasks():
    assert tx.task_of_view("kidney_right_long") is tx.task_of_view("kidney_left_long")
    assert tx.task_of_view("kidney_right_trans").name == "kidney_trans"
    assert tx.task_of_view("liver_right_trans") is None
    assert tx.landmarks_of_view(9) == ("sl_la_1", "sl_la_2")


def test_every_measurement_uses_landmarks_of_its_task():
    for m in tx.MEASUREMENTS:
        assert set(m.landmarks) <= set(tx.TASK_BY_NAME[m.task].landmarks)
    assert tx.landmark_channels_of_view("spleen_trans") == (10, 11, 12, 13)


def test_unknown_view_names_the_valid_ones():
    import pytest

    with pytest.raises(ValueError, match="spleen_long"):
        tx.view_by_name("kidney")
