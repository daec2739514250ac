"""Manual control of a running engine: the command vocabulary (`commands`), the persisted
operator state (`state`), the controller that applies commands to risk and execution
(`controller`) and the authenticated local channel with its client (`channel`).

The rule that enforces the state inside risk is `engine.rules.control` (`manual_control`).
"""
