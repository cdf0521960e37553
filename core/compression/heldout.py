"""A small held-out English text for the perplexity gate when a version has no validation data of
its own (a registered pretrained model, a folder registered by hand). Written for trainforge, so it
is in no model's training set verbatim; plain prose on everyday subjects, ~700 words, so that any
English model sees ordinary text. Perplexity on it compares a model with its own int8 copy: the
absolute value means little, the relative change is the gate."""

from __future__ import annotations

HELDOUT_TEXT = """\
The small harbour town wakes up before the sun does. By five in the morning the bakery on the corner \
has its lights on, and the smell of bread drifts down to the water, where the fishing boats are \
already coming back with the night's catch. The fishermen sort their nets on the quay while the \
gulls wait on the roofs, and by the time the first bus arrives from the city, most of the fish has \
been sold to the restaurants along the front.

Visitors often ask why the houses are painted in such bright colours. The usual answer is that the \
sailors wanted to recognise their own homes from far out at sea, even in fog. Historians are not \
sure the story is true, but nobody in the town seems to mind. Every spring the owners repaint their \
walls, and the council publishes a list of approved colours so that the street keeps its cheerful look.

A bridge is, at heart, a way of carrying a load across a gap. The oldest bridges were simply logs laid \
over a stream, and they worked because wood is strong when it bends only a little. Stone arches came \
later: an arch turns the weight pressing down on it into a push along its curve, and stone is very good \
at resisting a push. Modern suspension bridges hang the road from steel cables, which are strong when \
they are pulled. Each design uses a material in the way it is strongest, and that simple idea explains \
most of the shapes we see over rivers today.

Cooking rice well is easier than many people think. Rinse the grains in cold water until the water \
runs almost clear, which removes loose starch that would make the rice sticky. Use a little less than \
twice as much water as rice, bring it to the boil, then cover the pot and turn the heat down as low as \
it will go. After about fifteen minutes, take the pot off the heat and leave it closed for another ten. \
The steam finishes the cooking, and the grains come out separate and tender.

Learning a new language as an adult takes patience more than talent. Most learners make rapid progress \
in the first months, when every new word opens a door, and then reach a long plateau where they \
understand much more than they can say. The way through is regular practice: reading a few pages every \
day, listening to the radio, and speaking with people who are kind enough to wait for the right word. \
Mistakes are not a sign of failure; they are how the brain finds out which rules it has not yet learned.

The weather in the mountains changes quickly, and experienced walkers plan for it. A clear morning can \
turn into a cold, wet afternoon within an hour, especially in summer, when warm air rises from the \
valleys and forms clouds around the peaks. A good rule is to start early, carry a warm layer and a rain \
jacket even on sunny days, and turn back if the cloud comes down before you reach the top. The mountain \
will still be there next week.

Libraries have changed a great deal in the last thirty years, but their purpose has not. They still \
lend books, of course, and many now lend laptops, tools and even musical instruments. They offer quiet \
rooms for study, help with forms and job applications, and classes for children and older people. In \
many towns the library is the only warm indoor place where anyone may stay all day without buying \
anything, and that may be its most important service of all.

Gardeners say that the best time to plant a tree was twenty years ago, and the second best time is \
now. A young tree needs water more than anything else during its first two summers, while its roots \
spread out into the soil. After that it can usually look after itself, and it will give shade, shelter \
for birds and a little more beauty to the street for longer than the person who planted it will live.
"""
