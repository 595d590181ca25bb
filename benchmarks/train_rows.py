"""The fixed rows of the training benchmark: 32 everyday requests, each with a careful answer and
a worse one (about 150-300 tokens each with the default model's tokenizer).

Written out here, not drawn at random, so every run trains on the same tokens. Each answer is the
request's own opening and two points specific to it, then general advice from a shared bank chosen
by the row's index, so lengths vary from row to row the way real answers do.
"""

from __future__ import annotations

# (request, subject, first specific point, second specific point)
TOPICS = [
    ("How do I start running if I have never exercised?", "starting to run",
     "Begin with intervals: one minute of easy jogging, two minutes of walking, repeated for twenty minutes.",
     "Run three times a week with a rest day between sessions so your tendons can adapt."),
    ("What should I check before buying a used car?", "buying a used car",
     "Ask for the service history and compare the mileage on the invoices with the odometer.",
     "Have an independent mechanic look at the brakes, the suspension and any rust under the sills."),
    ("How can I keep my houseplants alive while I travel for two weeks?", "looking after houseplants",
     "Water them thoroughly the day before you leave and move them out of direct sun.",
     "A tray of wet pebbles or a cotton wick into a jar of water keeps the soil damp for days."),
    ("How do I write a cover letter for my first job?", "writing a first cover letter",
     "Open with the role you are applying for and one concrete reason you want this one in particular.",
     "Use school projects, volunteering or part-time work as evidence for the skills the advert asks for."),
    ("What is a sensible way to start saving money?", "starting to save",
     "Move a fixed amount to a separate account on the day you are paid, before you spend anything.",
     "Build a small emergency fund first, then save towards larger goals."),
    ("How do I help my child with maths homework without doing it for them?", "helping with maths homework",
     "Ask your child to explain how they would start, and let them talk through the first step.",
     "When they are stuck, give a smaller example of the same kind of problem rather than the answer."),
    ("How do I prepare for a job interview over video?", "a video interview",
     "Test the camera, the microphone and the link the day before, on the device you will use.",
     "Sit facing a window or a lamp so your face is lit, and put the camera at eye level."),
    ("What is the best way to learn a new language as an adult?", "learning a language",
     "Study a little every day; twenty minutes daily beats a long session once a week.",
     "Speak from the first week, even badly, with a tutor, an exchange partner or yourself."),
    ("How can I sleep better when I work night shifts?", "sleeping around night shifts",
     "Keep the bedroom dark and cool, and use blackout curtains or an eye mask.",
     "Keep the same sleep window on your days off as far as your family life allows."),
    ("How do I fix a dripping kitchen tap?", "fixing a dripping tap",
     "Turn off the water under the sink and open the tap to drain it before taking anything apart.",
     "Most drips come from a worn washer or cartridge; take the old one to the shop to match it."),
    ("What should I pack for a three-day hike?", "packing for a multi-day hike",
     "Pack layers rather than one heavy coat, and a waterproof shell whatever the forecast says.",
     "Carry a map and a compass as well as your phone, and know how to use them."),
    ("How do I talk to my landlord about a repair they keep ignoring?", "an ignored repair",
     "Put the request in writing, with the date, photos and what you have already asked for.",
     "Look up your local tenancy rules, since many set a time limit for urgent repairs."),
    ("How do I make my first loaf of bread?", "baking a first loaf",
     "A simple loaf needs only flour, water, salt and yeast; weigh them rather than using cups.",
     "Let the dough rise until it has roughly doubled, which takes longer in a cold kitchen."),
    ("How can I be more productive when working from home?", "working from home",
     "Keep a fixed start time and a place used only for work, even if it is one end of a table.",
     "Plan the day's three most important tasks the evening before and do the hardest first."),
    ("What should I do if I think my email has been hacked?", "a hacked email account",
     "Change the password from a device you trust and sign out of all other sessions.",
     "Turn on two-step verification and check the forwarding rules and recovery address."),
    ("How do I choose a laptop for university?", "choosing a student laptop",
     "Check what software your course needs; some engineering tools run only on one system.",
     "Battery life and weight matter more than raw speed if you carry it to lectures every day."),
    ("How can I reduce my household energy bill?", "cutting the energy bill",
     "Lower the heating by one degree and heat only the rooms you use.",
     "Seal draughts around doors and windows; the materials are cheap and the savings are immediate."),
    ("How do I teach my dog to walk on a loose lead?", "loose-lead walking",
     "Stop walking the moment the lead goes tight, and move on only when it is slack again.",
     "Reward your dog with a treat at your side often during the first walks."),
    ("What should I know before adopting a cat?", "adopting a cat",
     "Budget for food, litter, vaccinations and insurance as well as the adoption fee.",
     "Give the cat one quiet room at first, with its bed, food, water and litter tray."),
    ("How do I give a good presentation at work?", "giving a presentation",
     "Decide the one thing the audience should remember and build every slide around it.",
     "Rehearse out loud at least twice, timing yourself, and cut anything that runs over."),
    ("How can I eat more healthily on a tight budget?", "eating well on a budget",
     "Base meals on beans, lentils, oats, eggs and frozen vegetables, which are cheap and filling.",
     "Plan the week's meals before shopping and write a list so you buy only what you need."),
    ("How do I deal with a coworker who takes credit for my work?", "a coworker taking credit",
     "Keep a written record of what you did and when, such as emails and shared documents.",
     "Share progress with your manager regularly so your contribution is visible as it happens."),
    ("What is the safest way to clean mould off a bathroom ceiling?", "cleaning bathroom mould",
     "Open the window, wear gloves and eye protection, and never mix bleach with other cleaners.",
     "Mould comes back unless the room dries out; run the extractor fan during and after showers."),
    ("How do I start a vegetable garden in a small yard?", "a small vegetable garden",
     "Start with a raised bed or a few large pots in the sunniest spot you have.",
     "Grow what you actually eat; salad leaves, herbs and beans are forgiving for beginners."),
    ("How should I prepare for my first marathon?", "preparing for a marathon",
     "Follow a plan of at least sixteen weeks that raises your weekly distance slowly.",
     "Practise eating and drinking on long runs, with the gels and drinks you will use on race day."),
    ("How can I support a friend who has just lost their job?", "a friend who lost their job",
     "Ask how they are and listen first; advice can wait until they ask for it.",
     "Offer specific help, such as reading their CV or passing on a contact."),
    ("How do I back up the photos on my phone?", "backing up phone photos",
     "Turn on the phone's own cloud backup and check that it has finished at least once.",
     "Keep a second copy on a computer or an external drive, since one backup is not enough."),
    ("How do I plan a birthday party for a six-year-old?", "a child's birthday party",
     "Keep it to about two hours and invite roughly as many children as the child's age plus one.",
     "Plan a few simple games and one calm activity, like decorating biscuits, for the end."),
    ("How do I get better at chess?", "improving at chess",
     "Play slower games and review each one afterwards, looking for the move where it turned.",
     "Solve a few tactics puzzles every day; most games at club level are decided by tactics."),
    ("What should I do on my first day at a new job?", "a first day at work",
     "Arrive a little early, learn the names of the people you will work with most and write them down.",
     "Ask your manager what a good first month would look like for them."),
    ("How can I stop procrastinating on my thesis?", "procrastinating on a thesis",
     "Break the work into tasks small enough to finish in an hour, like drafting one paragraph.",
     "Write at the same time each day, and stop mid-sentence so starting tomorrow is easy."),
    ("How do I make my small apartment feel bigger?", "a small apartment",
     "Use light colours on the walls and a large mirror opposite the window.",
     "Choose furniture with legs and storage inside it, and clear the floor of anything unused."),
]

# General advice, shared by every topic; {s} is the subject.
CAREFUL = [
    "The most useful thing with {s} is to start small and make the first step easy to repeat.",
    "People often try to change everything at once and give up after a week, so pick one change and keep it.",
    "It helps to write down what you did and what happened, because memory makes progress look smaller than it is.",
    "If something does not work after a fair try, change one thing at a time so you can tell what made the difference.",
    "Ask someone who has done it before; ten minutes of their experience can save you a month of mistakes.",
    "Set aside a regular time in the week for it rather than waiting until you feel like it.",
    "Expect a setback or two; that is normal, and it says nothing about whether you can do it.",
    "Costs can creep up, so decide in advance what you are willing to spend and check it after the first month.",
    "Safety comes first: if anything feels wrong or risky, stop and get advice from a qualified person.",
    "Local libraries, community groups and official websites often have free guides that are worth reading.",
    "Be honest with yourself about how much time you really have, and plan around that rather than an ideal week.",
    "When you reach a small milestone, notice it; it makes the next stretch easier to face.",
]
CAREFUL_CLOSE = "If you tell me a bit more about your situation, I can suggest a plan that fits it."

WORSE_OPEN = "Honestly, {s} is not that complicated and most advice about it is overthinking."
WORSE = [
    "Just go for it and see what happens; you will figure it out along the way.",
    "There is no need to plan anything, since plans never survive the first day anyway.",
    "Most people who ask about {s} end up not doing it, so do not worry too much about getting it right.",
    "Experts make {s} sound harder than it is so that you pay them for help you do not need.",
    "If it goes wrong you can always try again later, or just give up; it is not a big deal.",
    "Spend whatever it takes, because cheap options are always a waste of money.",
    "Reading about it is a waste of time when you could be doing it instead.",
    "Everyone is different, so there is really nothing useful anyone can tell you.",
]


def _careful(i: int, subject: str, first: str, second: str) -> str:
    k = 5 + i % 6  # 5-10 general sentences: answers of roughly 150 to 300 tokens
    general = [CAREFUL[(i + j * 5) % len(CAREFUL)].format(s=subject) for j in range(k)]
    opening = f"Here is a practical way to approach {subject}."
    return " ".join([opening, first, second, *general, CAREFUL_CLOSE])


def _worse(i: int, subject: str, first: str) -> str:
    k = 4 + i % 5
    general = [WORSE[(i + j * 3) % len(WORSE)].format(s=subject) for j in range(k)]
    # The worse answer keeps one sound point, so the pair differs in care rather than in topic.
    return " ".join([WORSE_OPEN.format(s=subject), first, *general])


def preference_rows() -> list[dict]:
    """32 `{"prompt", "chosen", "rejected"}` rows as `cai train dpo` reads them."""
    rows = []
    for i, (ask, subject, first, second) in enumerate(TOPICS):
        rows.append({"prompt": [{"role": "user", "content": ask}],
                     "chosen": [{"role": "assistant", "content": _careful(i, subject, first, second)}],
                     "rejected": [{"role": "assistant", "content": _worse(i, subject, first)}]})
    return rows


def sft_rows() -> list[dict]:
    """The same requests with their careful answers, as `{"messages": [...]}` rows for `cai train sft`."""
    return [{"messages": r["prompt"] + r["chosen"]} for r in preference_rows()]
