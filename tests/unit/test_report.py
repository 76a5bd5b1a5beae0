def test_id_prefixes_are_unique_in_a_table() -> None:
    """Four bookings sharing ``aa000000`` (seen in one replay report) are shown long enough to tell apart."""
    from consumer.report import unique_prefixes

    ids = [f"aa000000-0000-4000-8000-00000000000{n}" for n in range(4)] + ["bb111111-0000-4000-8000-000000000000"]
    short = unique_prefixes(ids)
    assert len(set(short.values())) == len(ids)
    assert all(ident.startswith(prefix) for ident, prefix in short.items())
    assert unique_prefixes(["aa000000-1", "bb000000-1"]) == {"aa000000-1": "aa000000", "bb000000-1": "bb000000"}
