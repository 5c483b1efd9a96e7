"""Labelled sets for ``voicecall bench answers``: spoken-assistant questions with the facts a right answer contains,
and tool-use questions (which declared function a question needs, or none).

A question passes when the answer contains, for every key fact, at least one of its accepted spellings (whole words,
case-insensitive: ``("4", "four")``), and no tool markup. Questions are written as a speech recogniser with
punctuation (Whisper) would deliver them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    facts: tuple[tuple[str, ...], ...]  # every group must be matched by one of its spellings


def q(text: str, *facts: str | tuple[str, ...]) -> Question:
    return Question(text, tuple((f,) if isinstance(f, str) else f for f in facts))


ANSWERS: list[Question] = [
    q("What is the capital of France?", "Paris"),
    q("Who wrote Romeo and Juliet?", "Shakespeare"),
    q("What is two plus two?", ("4", "four")),
    q("How many days are there in a week?", ("7", "seven")),
    q("What is the largest planet in our solar system?", "Jupiter"),
    q("At what temperature does water boil in Celsius?", ("100", "hundred")),
    q("How many legs does a spider have?", ("8", "eight")),
    q("What is the capital of Japan?", "Tokyo"),
    q("Who painted the Mona Lisa?", ("Leonardo", "da Vinci")),
    q("What is the tallest mountain in the world?", "Everest"),
    q("What language do people speak in Brazil?", "Portuguese"),
    q("How many continents are there?", ("7", "seven")),
    q("What is ten minus three?", ("7", "seven")),
    q("What is five times six?", ("30", "thirty")),
    q("Who was the first president of the United States?", "Washington"),
    q("What is the capital of Italy?", "Rome"),
    q("What gas do plants take in from the air?", ("carbon dioxide", "CO2")),
    q("What is the largest ocean on Earth?", "Pacific"),
    q("How many hours are in a day?", ("24", "twenty-four", "twenty four")),
    q("In which country are the pyramids of Giza?", "Egypt"),
    q("What do you call a baby cat?", ("kitten", "kittens")),
    q("Which planet is known as the Red Planet?", "Mars"),
    q("How many sides does a triangle have?", ("3", "three")),
    q("What is the capital of Germany?", "Berlin"),
    q("What is the fastest land animal?", ("cheetah", "cheetahs")),
    q("How many months are in a year?", ("12", "twelve")),
    q("What color do you get when you mix blue and yellow?", "green"),
    q("What is the capital of Spain?", "Madrid"),
    q("Which instrument has black and white keys?", "piano"),
    q("What do bees make?", "honey"),
    q("What is the opposite of hot?", "cold"),
    q("How many minutes are in an hour?", ("60", "sixty")),
    q("What is the closest star to the Earth?", "sun"),
    q("What is the main language spoken in Mexico?", "Spanish"),
    q("Who discovered gravity when an apple fell on his head?", "Newton"),
    q("What is the largest animal in the world?", ("blue whale", "whale")),
    q("What is the chemical symbol for gold?", "Au"),
    q("What is the capital of the United Kingdom?", "London"),
    q("How many wheels does a bicycle have?", ("2", "two")),
    q("What is frozen water called?", "ice"),
    q("What is the capital of Egypt?", "Cairo"),
    q("Which animal is known as the king of the jungle?", ("lion", "lions")),
    q("What day comes after Monday?", "Tuesday"),
    q("What is the hardest natural substance?", ("diamond", "diamonds")),
    q("Tell me something about the moon.", ("Earth", "orbit", "orbits", "satellite", "crater", "craters", "tides")),
]

HELDOUT: list[Question] = [
    # Written before any prompt tuning and never used to choose one: a check against fitting the 45 above.
    # General knowledge
    q("What is the capital of Canada?", "Ottawa"),
    q("What is the capital of Russia?", "Moscow"),
    q("What is the capital of China?", "Beijing"),
    q("What is the capital of Greece?", "Athens"),
    q("Who wrote Pride and Prejudice?", "Austen"),
    q("Who painted The Starry Night?", "Gogh"),
    q("Which planet is closest to the sun?", "Mercury"),
    q("What is the longest river in the world?", ("Nile", "Amazon")),
    q("How many players are on a soccer team?", ("11", "eleven")),
    q("What language do people speak in France?", "French"),
    q("What is the currency of Japan?", "yen"),
    q("Who invented the telephone?", "Bell"),
    q("What do caterpillars turn into?", ("butterfly", "butterflies", "moth", "moths")),
    q("How many legs does an insect have?", ("6", "six")),
    q("Which ocean lies between Europe and America?", "Atlantic"),
    q("What is the chemical formula of water?", "H2O"),
    q("What is the largest land animal?", ("elephant", "elephants")),
    q("What do you call a baby dog?", ("puppy", "puppies", "pup", "pups")),
    q("How many strings does a guitar usually have?", ("6", "six")),
    q("What color is the sky on a clear day?", "blue"),
    q("Which season comes after winter?", "spring"),
    q("What gas do people need to breathe?", "oxygen"),
    q("Who was the first person to walk on the moon?", "Armstrong"),
    q("What is the opposite of fast?", "slow"),
    # Arithmetic and numbers
    q("What is three plus five?", ("8", "eight")),
    q("What is nine minus four?", ("5", "five")),
    q("What is seven times eight?", ("56", "fifty-six", "fifty six")),
    q("What is twelve divided by three?", ("4", "four")),
    q("What is half of twenty?", ("10", "ten")),
    q("How many seconds are in a minute?", ("60", "sixty")),
    q("At what temperature does water freeze in Celsius?", ("0", "zero")),
    q("How many days are there in a leap year?", ("366", "three hundred sixty-six", "three hundred and sixty-six")),
    # Definitions
    q("What is photosynthesis?", ("plant", "plants"), ("light", "sunlight", "sun")),
    q("What does a thermometer measure?", "temperature"),
    q("What is a volcano?", ("lava", "magma", "erupt", "erupts", "eruption", "eruptions")),
    q("What is a dictionary?", ("word", "words")),
    q("What does a dentist take care of?", ("teeth", "tooth")),
    q("What is a noun?", ("person", "place", "thing", "name")),
    q("What is gravity?", ("force", "pull", "pulls", "attract", "attracts", "attraction")),
    # Everyday advice
    q("How often should I brush my teeth?", ("twice", "two times", "2 times")),
    q("What should I do if I burn my finger?", ("cool", "cold", "water")),
    q("What should I wear when it is cold outside?",
      ("coat", "jacket", "warm", "warmly", "layers", "sweater", "scarf", "gloves", "hat")),
    q("What should I do before crossing the street?", ("look", "check", "traffic", "cars")),
    q("How can I stay hydrated?", "water"),
    q("How can I fall asleep faster?",
      ("screen", "screens", "phone", "caffeine", "routine", "dark", "relax", "relaxing", "breathe", "breathing",
       "read", "reading", "schedule", "bedtime")),
]

# ------------------------------------------------------------------------------------------------ tools
WEATHER: dict[str, Any] = {
    "type": "function", "name": "get_weather",
    "description": "Get the current weather and forecast (temperature, rain, wind) for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]},
}
TIMER: dict[str, Any] = {
    "type": "function", "name": "set_timer",
    "description": "Start a countdown timer or an alarm.",
    "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]},
}
LIGHTS: dict[str, Any] = {
    "type": "function", "name": "set_lights",
    "description": "Turn the lights in a room on or off.",
    "parameters": {"type": "object", "properties": {
        "room": {"type": "string"}, "on": {"type": "boolean"}}, "required": ["room", "on"]},
}
MUSIC: dict[str, Any] = {
    "type": "function", "name": "play_music",
    "description": "Play a song, an artist or a genre of music.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}
TOOLS: list[dict[str, Any]] = [WEATHER, TIMER, LIGHTS, MUSIC]


@dataclass(frozen=True, slots=True)
class ToolQuestion:
    text: str
    tool: str | None  # the function the question needs, or None


TOOL_QUESTIONS: list[ToolQuestion] = [
    ToolQuestion("What's the weather like in Paris?", "get_weather"),
    ToolQuestion("Will it rain in London tomorrow?", "get_weather"),
    ToolQuestion("How hot is it in Madrid right now?", "get_weather"),
    ToolQuestion("Do I need an umbrella in Berlin today?", "get_weather"),
    ToolQuestion("What's the temperature in Tokyo?", "get_weather"),
    ToolQuestion("Is it windy in Chicago?", "get_weather"),
    ToolQuestion("Set a timer for ten minutes.", "set_timer"),
    ToolQuestion("Start a five minute timer.", "set_timer"),
    ToolQuestion("Remind me in twenty minutes.", "set_timer"),
    ToolQuestion("Set an alarm for thirty minutes from now.", "set_timer"),
    ToolQuestion("Count down three minutes for my tea.", "set_timer"),
    ToolQuestion("Turn on the lights in the kitchen.", "set_lights"),
    ToolQuestion("Switch off the bedroom lights.", "set_lights"),
    ToolQuestion("Can you turn the living room light on?", "set_lights"),
    ToolQuestion("Lights off in the bathroom, please.", "set_lights"),
    ToolQuestion("Play some jazz.", "play_music"),
    ToolQuestion("Play a song by the Beatles.", "play_music"),
    ToolQuestion("I want to listen to classical music.", "play_music"),
    ToolQuestion("Put on some rock music.", "play_music"),
    ToolQuestion("Play Bohemian Rhapsody.", "play_music"),
    ToolQuestion("What is the capital of France?", None),
    ToolQuestion("Who wrote Romeo and Juliet?", None),
    ToolQuestion("What is two plus two?", None),
    ToolQuestion("How are you today?", None),
    ToolQuestion("Tell me a fun fact about octopuses.", None),
    ToolQuestion("How many legs does a spider have?", None),
    ToolQuestion("What is the largest planet in our solar system?", None),
    ToolQuestion("Thank you, that's all.", None),
    ToolQuestion("What does a meteorologist do?", None),
    ToolQuestion("Why is the sky blue?", None),
    ToolQuestion("Who invented the light bulb?", None),
    ToolQuestion("What is a minute hand on a clock?", None),
    ToolQuestion("Who was Mozart?", None),
    ToolQuestion("What is your name?", None),
    ToolQuestion("How do rainbows form?", None),
    ToolQuestion("What is the capital of Japan?", None),
    ToolQuestion("Can you help me with something?", None),
    ToolQuestion("What is the boiling point of water?", None),
    ToolQuestion("Good morning!", None),
    ToolQuestion("What do bees make?", None),
]

# A function result the answer must put into words (after function_call_output).
TOOL_RESULT_CASES: list[tuple[str, str, str, str, tuple[tuple[str, ...], ...]]] = [
    ("What's the weather like in Paris?", "get_weather", '{"city": "Paris"}',
     '{"city": "Paris", "temperature_c": 21, "conditions": "sunny"}', (("21", "twenty-one", "twenty one", "sunny"),)),
    ("Set a timer for ten minutes.", "set_timer", '{"minutes": 10}',
     '{"status": "started", "minutes": 10}', (("10", "ten"),)),
    ("Will it rain in London tomorrow?", "get_weather", '{"city": "London"}',
     '{"city": "London", "tomorrow": "rain", "temperature_c": 14}', (("rain", "rainy", "raining"),)),
    ("Turn on the lights in the kitchen.", "set_lights", '{"room": "kitchen", "on": true}',
     '{"room": "kitchen", "lights": "on"}', (("kitchen",),)),
]
