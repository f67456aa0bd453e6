"""Word pools for the generated pretraining text.

Broad on purpose: the base must learn to COPY whatever entity a prompt holds (names, places,
years, codes), so entities are drawn from large pools plus made-up words built from syllables
that no list contains. Table and field names deliberately avoid the bundled tasks' schema
(customers/orders): the base learns the *shape* of question -> query, not the task's answers.
"""

from __future__ import annotations

import random

FIRST_NAMES = """Ada Alan Alice Amara Amir Ana Andre Anna Arjun Aylin Beatriz Ben Bianca Boris
Camila Carlos Chen Chiara Clara Daniel Dara Diego Dmitri Elena Eli Elif Emma Eva Farah Felix
Fatima Finn Gabriel Grace Hana Hannah Hugo Ian Ines Ingrid Ivan Jack James Jana Javier Jin Jonas
Julia Kai Kamal Karin Kenji Kofi Lara Laura Leila Leo Liam Lin Lucas Lucia Luis Maya Marco Maria
Mark Marta Mateo Mei Mia Mina Mohammed Nadia Nina Noah Nora Olga Omar Oscar Owen Paula Pedro
Priya Rafael Rania Ravi Rosa Ruth Sam Sara Sofia Sven Tara Theo Tomas Uma Victor Wei Yara Yusuf
Zara Zoe Ahmed Beth Cyrus Dora Emil Freya Gita Henrik Iris Joel Kira Lena Milo Nils Odile Pia
Quinn Rosalind Soren Talia Ugo Vera Wanda Xavier Yosef Zeno""".split()

LAST_NAMES = """Abbott Adeyemi Alvarez Andersen Baker Banerjee Becker Bell Brooks Brown Castro
Chen Clarke Cohen Costa Cruz Dahl Das Diaz Dubois Evans Fischer Flores Garcia Gomez Gonzalez
Gupta Hall Hansen Hayes Hernandez Hill Ito Jensen Johnson Kaur Keller Khan Kim Klein Kowalski
Kumar Larsen Lee Lopez Martin Meyer Miller Moreau Morris Muller Murphy Nakamura Nguyen Novak
Okafor Olsen Ortiz Park Patel Perez Petrov Quinn Reyes Rossi Russo Sato Schmidt Silva Singh
Smith Sousa Stone Suzuki Tanaka Taylor Torres Turner Wagner Walker Wang Weber Wilson Wong Wright
Yamamoto Young Zhang Ziegler Moss Ferreira Lindqvist Haddad Mensah Rahman Iyer Volkov Bauer
Fontaine Grimaldi Horvath Ivanova Jovanovic Lund Mendes Nyberg Ostrowski Pereira Rinaldi""".split()

CITIES = """Berlin Paris London Madrid Rome Lisbon Vienna Prague Warsaw Budapest Athens Dublin
Oslo Stockholm Helsinki Copenhagen Amsterdam Brussels Zurich Geneva Munich Hamburg Milan Naples
Barcelona Seville Porto Lyon Marseille Krakow Riga Tallinn Vilnius Sofia Belgrade Zagreb
Istanbul Ankara Cairo Lagos Nairobi Accra Dakar Casablanca Tunis Johannesburg Kampala
Tokyo Osaka Kyoto Seoul Busan Beijing Shanghai Shenzhen Taipei Manila Hanoi Bangkok Jakarta
Singapore Mumbai Delhi Chennai Kolkata Dhaka Karachi Lahore Tehran Dubai Doha Riyadh Amman
Sydney Melbourne Perth Auckland Wellington Toronto Montreal Vancouver Calgary Ottawa Chicago
Boston Denver Seattle Austin Dallas Houston Phoenix Portland Atlanta Miami Detroit Lima Bogota
Quito Santiago Caracas Montevideo Havana Recife Salvador Cordoba Rosario Medellin Cusco Leeds
Bristol Glasgow Edinburgh Cardiff Bergen Gothenburg Malmo Aarhus Utrecht Ghent Antwerp Graz
Salzburg Turin Bologna Florence Valencia Bilbao Nantes Lille Bordeaux Dresden Leipzig Cologne""".split()

COUNTRIES = """France Germany Spain Italy Portugal Austria Poland Greece Ireland Norway Sweden
Finland Denmark Netherlands Belgium Switzerland Turkey Egypt Nigeria Kenya Ghana Senegal Morocco
Japan Korea China Vietnam Thailand Indonesia India Pakistan Iran Jordan Australia Canada Mexico
Brazil Chile Peru Colombia Argentina Uruguay Cuba Iceland Estonia Latvia Croatia Serbia""".split()

COLORS = "red blue green yellow black white orange purple brown gray silver gold pink teal".split()
MONTHS = """January February March April May June July August September October November
December""".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
ANIMALS = "cat dog rabbit parrot horse goat hamster turtle fox owl lizard pony duck".split()
JOBS = """teacher nurse pilot baker farmer engineer painter writer doctor chef driver lawyer
carpenter gardener librarian musician student scientist mechanic tailor""".split()
FOODS = "bread soup rice apples cheese noodles beans pie salad fish tea coffee cake eggs".split()
OBJECTS = """lamp chair table bicycle camera kettle guitar backpack umbrella clock radio laptop
phone jacket notebook map bottle basket ladder mirror""".split()
ADJECTIVES = """small large old new quiet busy bright dark warm cold heavy light cheap expensive
clean simple careful happy tired early late fast slow strong gentle""".split()
PLACES = """park market library station museum harbor school garden bakery cafe hospital office
bridge river beach forest village farm theater stadium""".split()

_ONSETS = "b d f g k l m n p r s t v z br dr gr kl pr st tr sh ch th".split()
_VOWELS = "a e i o u ai ea io ou".split()
_CODAS = ["", "", "n", "r", "l", "s", "k", "m", "th", "nd"]


def made_up_word(rng: random.Random, syllables: tuple[int, int] = (2, 3)) -> str:
    """A pronounceable word that appears in no list: copying it cannot be memorised."""
    n = rng.randint(*syllables)
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(n))


def made_up_name(rng: random.Random) -> str:
    return made_up_word(rng).capitalize()


def person(rng: random.Random) -> str:
    first = made_up_name(rng) if rng.random() < 0.15 else rng.choice(FIRST_NAMES)
    last = made_up_name(rng) if rng.random() < 0.15 else rng.choice(LAST_NAMES)
    return f"{first} {last}"


def city(rng: random.Random) -> str:
    return made_up_name(rng) if rng.random() < 0.15 else rng.choice(CITIES)


def year(rng: random.Random) -> int:
    return rng.randint(1900, 2030)


def code(rng: random.Random) -> str:
    """Identifiers such as 'KX-4821': letters and digits to copy exactly."""
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(rng.randint(2, 3)))
    return f"{letters}-{rng.randint(10, 9999)}"


def title(rng: random.Random) -> str:
    """A book/film-like title of 1-4 words, sometimes made up."""
    words = [rng.choice(ADJECTIVES + COLORS).capitalize(),
             rng.choice(PLACES + OBJECTS + ANIMALS).capitalize()]
    if rng.random() < 0.3:
        words = ["The"] + words
    if rng.random() < 0.25:
        words.append(made_up_name(rng))
    return " ".join(words)
