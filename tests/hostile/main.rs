//! The exploit suite: one test per hole a hostile Dockerfile, context, image, archive or
//! registry could open, each run as root and as an unprivileged user with a subordinate ID
//! range (`support::Identity`), each asserting that the harm did not happen: the host file
//! still exists, the device did not open, the secret is nowhere under the store, kiln exited
//! with an error rather than a signal.
//!
//! The unprivileged identity is the test user `kilnrootless` (created with a subordinate
//! range by `support::test_user`, as `tests/rootless.rs` does); without root the rootless
//! half is skipped with a note.

#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)] // each test module uses its own part
mod support;

mod input;
mod input_limits;
mod load;
mod network;
mod output;
mod prepared;
mod sandbox;
mod secrets;
mod snapshot;
mod store;
