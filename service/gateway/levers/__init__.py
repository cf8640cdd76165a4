"""The gateway's cost levers, each independent of the others: A/B arms, the budget knob, the
cascade,
prompt trimming and the response cache."""
