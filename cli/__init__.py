"""The ``tierwise`` console command: the top of the house: it imports the parts,
nothing imports it."""
