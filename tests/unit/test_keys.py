"""Redis key names: no user name or destination can move a user's keys apart (Cluster slots)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from stompgate.bus.keys import Keys

keys = Keys("sg")
names = st.text(min_size=1, max_size=40) | st.sampled_from(["}x", "a{b}", "{}", "50%{off", "{", "}"])


@given(names, st.text(max_size=40))
def test_a_users_channel_store_and_index_share_one_slot(user: str, destination: str) -> None:
    channel, store, index = keys.publish_keys(user, destination)
    assert (channel, store, index) == (
        keys.user_channel(user, destination),
        keys.store(user, destination),
        keys.store_index(user),
    )
    encoded = [k.encode("utf-8", "surrogatepass") for k in (channel, store, index)]
    assert len({key_slot(k) for k in encoded}) == 1


@given(names, names)
def test_different_users_never_share_a_store(a: str, b: str) -> None:
    if a != b:
        assert keys.store_index(a) != keys.store_index(b)
