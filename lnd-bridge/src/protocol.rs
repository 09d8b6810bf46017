//! Plain types exchanged between worker cores and the bridge (stub).
