"""Generate the general-text probe: short English passages on everyday and technical topics, for
perplexity before and after fine-tuning (the forgetting check).

No task trains on this text and the base's pretraining must not read it (the base build excludes
assets/tasks/). It is written here, from templates of our own, so it shares no sentences with any
corpus the base saw. Passages avoid the tasks' own vocabulary (orders, SQL, JSON).
"""

from __future__ import annotations

import random
import string

PASSAGES_PER_TOPIC = 10
SENTENCES_PER_PASSAGE = 4

# topic -> (slot values, sentence templates). A slot may repeat inside a sentence with one value.
TOPICS: dict[str, tuple[dict[str, tuple[str, ...]], tuple[str, ...]]] = {
    "cooking": ({"dish": ("lentil soup", "vegetable curry", "bread dough", "tomato sauce", "porridge"),
                 "time": ("ten minutes", "half an hour", "an hour", "twenty minutes"),
                 "spice": ("cumin", "black pepper", "paprika", "thyme", "ginger")}, (
        "When you cook {dish}, add the {spice} early so its flavour spreads evenly.",
        "Most recipes for {dish} need about {time} on a low heat.",
        "A heavy pot keeps the temperature steady, which matters more than the exact recipe.",
        "Taste {dish} before serving and adjust the salt at the very end.",
        "Leftover {dish} often tastes better the next day, once the {spice} has settled in.",
        "Stir now and then, and let it rest for {time} before you serve it.",
    )),
    "weather": ({"season": ("spring", "autumn", "winter", "summer"),
                 "thing": ("fog", "a thunderstorm", "frost", "light rain", "strong wind")}, (
        "In {season} the mornings can bring {thing}, even after a clear evening.",
        "Forecasters compare pressure maps to judge whether {thing} will reach the coast.",
        "Warm air holds more moisture, so humid days in {season} often end with {thing}.",
        "A falling barometer is one of the oldest signs that the weather is about to change.",
        "Farmers watch the sky closely in {season}, because {thing} can ruin a harvest.",
        "Clouds that build quickly in the afternoon usually mean the air is unstable.",
    )),
    "gardening": ({"plant": ("tomatoes", "sunflowers", "roses", "potatoes", "strawberries", "tulips"),
                   "month": ("March", "April", "May", "September", "October")}, (
        "Plant {plant} in {month} if the soil is no longer frozen.",
        "{plant} grow best in a sunny spot with soil that drains well.",
        "Water in the early morning so the leaves dry before the heat of the day.",
        "A layer of mulch keeps the roots of {plant} cool and holds moisture.",
        "Gardeners often rotate beds each year to keep pests away from {plant}.",
        "By {month} most gardens need less water and more attention to weeds.",
    )),
    "networking": ({"proto": ("TCP", "UDP", "HTTP", "DNS", "TLS"),
                    "dev": ("router", "switch", "laptop", "phone", "server")}, (
        "{proto} traffic from a {dev} passes through several hops before it reaches its destination.",
        "A {dev} keeps a small table that maps addresses to the ports it has seen.",
        "When a packet is lost, {proto} either sends it again or leaves the decision to the application.",
        "Latency is the delay of a single trip, while bandwidth is how much fits through per second.",
        "Engineers trace a slow {dev} by measuring the time spent at each step of the path.",
        "Firewalls decide which {proto} connections may cross the border of a network.",
    )),
    "astronomy": ({"body": ("Mars", "Jupiter", "the Moon", "Venus", "Saturn"),
                   "tool": ("a small telescope", "binoculars", "a refracting telescope")}, (
        "On a dark night {body} can be seen with {tool}.",
        "Light from distant stars takes years to arrive, so we see them as they were long ago.",
        "{body} moves against the background stars from one week to the next.",
        "Astronomers record the brightness of {body} to learn about its surface and its air.",
        "Observers let their eyes adapt for twenty minutes before they look through {tool}.",
        "The planets stay close to the path that the Sun follows across the sky.",
    )),
    "history": ({"era": ("the Middle Ages", "the Bronze Age", "the eighteenth century", "antiquity"),
                 "thing": ("trade routes", "city walls", "printed books", "river ports", "roads")}, (
        "During {era}, {thing} shaped how people lived and worked.",
        "Historians read letters and tax records to understand daily life in {era}.",
        "Many towns grew where {thing} crossed a river or a valley.",
        "Archaeologists date a layer of soil by the objects they find inside it.",
        "The spread of {thing} changed which regions became rich in {era}.",
        "Old maps show what their makers believed as much as what they saw.",
    )),
    "health": ({"habit": ("regular sleep", "a daily walk", "drinking water", "stretching", "eating vegetables"),
                "part": ("the shoulders", "the knees", "the joints", "the muscles")}, (
        "Doctors recommend {habit} because it helps {part} over many years.",
        "Small changes such as {habit} are easier to keep than strict plans.",
        "After long hours at a desk, {part} often feel stiff and tired.",
        "Rest is part of training: the body repairs itself between efforts.",
        "People who keep up {habit} tend to report better mood and more energy.",
        "If pain in {part} lasts for weeks, it is wise to see a professional.",
    )),
    "music": ({"inst": ("piano", "violin", "guitar", "drums", "flute"),
               "style": ("jazz", "folk", "classical", "rock", "blues")}, (
        "Learning the {inst} takes patience, and short daily practice beats long rare sessions.",
        "In {style} the rhythm often matters as much as the melody.",
        "A good teacher shows how to play the {inst} without tension in the hands.",
        "Many {style} musicians learn by ear before they read written notes.",
        "Tuning the {inst} before each session trains the ear as well.",
        "Recording yourself reveals mistakes that are easy to miss while playing.",
    )),
    "travel": ({"mode": ("the night train", "a ferry", "a bicycle", "a long bus ride"),
                "place": ("the mountains", "the coast", "a small island", "an old harbour town")}, (
        "Taking {mode} to {place} is slower but shows more of the country.",
        "Pack light: a bag you can carry all day makes every journey easier.",
        "Travellers who reach {place} early in the morning often have the streets to themselves.",
        "Local markets are a good place to learn a few words of the language.",
        "A paper map still helps when the phone battery runs out near {place}.",
        "Booking {mode} ahead of time usually costs less than buying at the station.",
    )),
    "programming": ({"thing": ("a cache", "a queue", "a hash table", "a binary tree", "a lock"),
                     "lang": ("C", "Rust", "Java", "Go", "JavaScript")}, (
        "Programmers use {thing} when they need fast access without scanning every item.",
        "In {lang}, a careless use of {thing} can waste memory or slow the program down.",
        "Tests that run in seconds are run often, and tests that run often catch bugs early.",
        "Reading code is harder than writing it, so clear names save time for everyone.",
        "Profiling a {lang} program shows where the time really goes before anyone optimizes.",
        "A bug that only appears under load often involves {thing} shared between threads.",
    )),
    "physics": ({"q": ("energy", "momentum", "heat", "charge"),
                 "obj": ("a pendulum", "a falling stone", "a spinning wheel", "a spring")}, (
        "In a closed system {q} is conserved, which makes many problems easier to solve.",
        "The motion of {obj} can be predicted from a few simple measurements.",
        "Friction turns part of the motion of {obj} into {q} that warms its surroundings.",
        "Experiments repeat a measurement many times and report the spread of the results.",
        "Students often start with {obj} because its behaviour is easy to see and to measure.",
        "Units keep a calculation honest: adding metres to seconds is always a mistake.",
    )),
    "economics": ({"good": ("bread", "housing", "fuel", "coffee", "electricity"),
                   "force": ("demand", "supply", "interest rates", "wages")}, (
        "When {force} changes, the price of {good} usually follows within months.",
        "Households spend a larger share of their income on {good} when money is tight.",
        "Economists compare prices over years by correcting for inflation first.",
        "A shortage of {good} can ripple through many other parts of the economy.",
        "Central banks adjust {force} to cool or warm the economy.",
        "Markets react quickly to news, but wages and rents adjust slowly.",
    )),
    "animals": ({"animal": ("owls", "foxes", "bees", "dolphins", "crows", "beavers"),
                 "habitat": ("forests", "rivers", "open fields", "coastal waters", "cities")}, (
        "{animal} are often found in {habitat}, where food is easy to reach.",
        "Biologists follow {animal} for months to learn how they raise their young.",
        "Many animals change their routines with the seasons to save energy.",
        "{animal} communicate with sounds and movements that scientists are still decoding.",
        "Losing {habitat} is the main threat to many species today.",
        "Some {animal} have learned to live close to people and their buildings.",
    )),
    "sports": ({"sport": ("football", "tennis", "swimming", "cycling", "rowing"),
                "skill": ("balance", "timing", "endurance", "footwork")}, (
        "Coaches in {sport} spend much of each session on {skill}.",
        "A warm-up of ten minutes lowers the risk of injury in {sport}.",
        "Good {skill} often matters more than raw strength.",
        "Teams review recordings of past games to spot patterns in their play.",
        "Young players in {sport} improve fastest when practice feels like play.",
        "Recovery days are planned as carefully as training days.",
    )),
    "electronics": ({"part": ("a resistor", "a capacitor", "a diode", "a transistor"),
                     "tool": ("a multimeter", "an oscilloscope", "a soldering iron")}, (
        "{part} is one of the first components a beginner learns to use.",
        "With {tool} you can check a circuit before you power it up.",
        "Heat is the enemy of most components, so boards are designed to let air flow.",
        "Placing {part} the wrong way round can stop the whole circuit from working.",
        "Hobbyists keep {tool} on the bench because it saves hours of guessing.",
        "A clear drawing of the circuit makes it far easier to find a fault later.",
    )),
    "reading": ({"genre": ("mysteries", "biographies", "poetry", "science fiction", "essays"),
                 "place": ("the library", "a quiet cafe", "the train", "bed")}, (
        "Many people read {genre} in {place} to unwind after work.",
        "A library card opens access to more books than any shelf at home can hold.",
        "Readers of {genre} often recommend titles to each other in small clubs.",
        "Reading aloud to children builds vocabulary long before they go to school.",
        "Some readers keep notes in the margins so they can find ideas again.",
        "Short chapters make {genre} easy to read in {place}.",
    )),
}


def _fill(template: str, slots: dict[str, tuple[str, ...]], rng: random.Random) -> str:
    names = sorted({f for _, f, _, _ in string.Formatter().parse(template) if f})
    text = template.format(**{n: rng.choice(slots[n]) for n in names})
    return text[0].upper() + text[1:]


def generate(rng: random.Random) -> list[dict[str, str]]:
    """PASSAGES_PER_TOPIC unique passages per topic, topics interleaved."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    per_topic = {t: 0 for t in TOPICS}
    attempts = 0
    while any(n < PASSAGES_PER_TOPIC for n in per_topic.values()):
        attempts += 1
        if attempts > 100 * PASSAGES_PER_TOPIC * len(TOPICS):
            raise RuntimeError("probe templates too few for the requested number of passages")
        for topic, (slots, sentences) in TOPICS.items():
            if per_topic[topic] >= PASSAGES_PER_TOPIC:
                continue
            picked = rng.sample(sentences, SENTENCES_PER_PASSAGE)
            text = " ".join(_fill(s, slots, rng) for s in picked)
            if text not in seen:
                seen.add(text)
                per_topic[topic] += 1
                out.append({"text": text})
    return out
