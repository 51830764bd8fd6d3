"""`harness predict`: the sweet spot from a few short runs. forecast is the pure part (the fit of
S(B), intervals, the choice of the sweet spot, predict.json); runs is the part that trains (short
runs, the timing pass, the order of the command). Imports training/ and analysis/, never report/."""
