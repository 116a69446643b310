"""Peer libraries (tftables, tensorpack), run in their own virtualenv (see setup_peers.sh)."""
