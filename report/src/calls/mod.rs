//! The streaming call core that `report`, `script` and `--perfetto` share.

pub(crate) mod pairing;
