"""CALLS: ringing, WebRTC signaling on the socket, TURN, LiveKit for groups, the aiortc SFU, history."""
