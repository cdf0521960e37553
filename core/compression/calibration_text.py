"""A small English text to calibrate activation smoothing (core.compression.smoothing) on, when a
version has no training rows of its own. Written for trainforge, like HELDOUT_TEXT, on other
subjects and in other words (no sentence of one is in the other), so that the perplexity gate never
scores the text the smoothing scales were measured on. ~500 words of plain prose: smoothing only
needs the typical size of each activation channel, which ordinary English shows."""

from __future__ import annotations

CALIBRATION_TEXT = """\
A bicycle asks for very little, but it does ask for something. Once a month, pump the tyres to the \
pressure printed on their sides, because soft tyres wear out quickly and make every hill feel steeper. \
Wipe the chain with an old cloth and put one drop of oil on each link, then wipe off what is left, \
since extra oil only collects dust. If the brakes squeal or the levers pull nearly to the handlebar, \
the pads are worn and should be changed before a long ride, not after.

The night train leaves the capital a little before ten. Most passengers settle into their narrow \
bunks at once, but a few stand in the corridor and watch the lights of the suburbs thin out into \
dark fields. Somewhere after midnight the train stops at a quiet station where nobody gets on or \
off, and the only sound is a guard walking along the platform with a lamp. By breakfast the view \
has changed completely: pine forests, a lake with mist on it, and children waiting for a school bus.

Honey bees live in colonies of tens of thousands, yet each hive has only one queen. The workers \
are all female, and their jobs change as they grow older. Young bees clean the cells and feed the \
larvae; older ones build wax, guard the entrance, and finally fly out to gather nectar and pollen. \
A forager that finds a rich patch of flowers returns and performs a short dance, and the angle and \
length of the dance tell the others in which direction to fly and how far.

Many people keep a notebook for a week and then forget it in a drawer. The habit lasts longer when \
the notebook is small enough to carry everywhere and when nothing written in it has to be good. A \
shopping list, a phone number, a sentence overheard on the bus, a sketch of a chair: all of it \
counts. Months later, turning the pages brings back whole afternoons that would otherwise have \
been lost.

A mechanical clock is a set of gears that lets a spring or a weight unwind slowly and evenly. The \
secret is the escapement, a small part that stops the gears and releases them again with each \
swing of the pendulum or each turn of the balance wheel. Without it, the spring would spin the \
hands round in a few seconds. With it, the energy of a single winding can be spread over a day or \
even a week, one tick at a time.

Saving money is rarely about one big decision. It is usually the result of small ones repeated for \
years: cooking at home more often, repairing a coat instead of replacing it, waiting a few days \
before buying something that seemed urgent in the shop. A simple method is to move a fixed amount \
into a separate account on the day wages arrive, so that it is gone before it can be spent.

When the first snow falls on a city, the streets grow strangely quiet. Cars move slowly, buses run \
late, and people who normally hurry past each other stop to talk about the weather. Children drag \
sledges to the nearest slope, and by the afternoon every park has a row of lopsided snowmen with \
stones for eyes. A week later the snow has turned grey, and everyone is tired of it.
"""
