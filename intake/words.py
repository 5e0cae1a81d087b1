"""The 256 words a case secret is written in: one word per byte, 16 words for 128 bits.

Short, common, easy to spell and to tell apart when written by hand; no two share
their first four letters, so a word can be recognised from its start. The page gets
the list from the server with the page itself (the same list in both places).
"""

from __future__ import annotations

WORDS = (
    "acorn actor adult agent alarm album alert alley amber angle ankle apple april apron arena armor "
    "arrow aspen atlas attic audio aunt autumn avoid award bacon badge bagel baker bamboo banjo barley "
    "basket beach beard beetle bench berry bicycle birch bison blanket blossom board bonus border bottle "
    "bounce brave bread brick bridge brook brush bubble bucket bugle bunny butter cabin cactus "
    "camel candle canoe canyon carpet carrot castle cattle cedar cello chalk cherry chess circle "
    "clover cobalt cocoa comet copper coral cotton cousin coyote crayon cricket crown curtain "
    "daisy dance delta denim desert diamond dinner dolphin donkey dragon dream drum eagle earth echo "
    "elbow ember engine equal fabric falcon farmer feather fence ferry fiddle finch flame "
    "flute forest fossil fox frost galaxy garden garlic gentle giant ginger globe goose grape "
    "gravel guitar hammer harbor harvest hazel helmet heron hockey honey husky igloo island "
    "ivory jacket jaguar jelly jewel jigsaw jolly judge juice jungle kayak kettle kitten koala ladder "
    "lagoon lantern lemon lizard lunar magnet mango maple marble meadow melon mirror "
    "mitten monkey moose mosaic muffin museum napkin nectar needle noodle north nutmeg oasis ocean "
    "olive onion orange orbit otter oyster paddle panda paper parrot peach pebble pepper piano pillow "
    "pilot planet plum polar pony potato puzzle quartz quilt rabbit radio rainbow raven record ribbon "
    "river robin rocket rose ruby saddle salmon sandal scarf shadow shell silver skate sleigh snail "
    "socks spider spoon stamp storm sugar summer sunset swan table tiger toast tomato tulip "
    "turtle valley velvet violin wagon walnut whale willow window winter wizard yellow zebra"
).split()

assert len(WORDS) == 256, len(WORDS)
assert len({w[:4] for w in WORDS}) == 256, "two words share their first four letters"
