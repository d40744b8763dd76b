/**
 * Factual QA probes for the retention suite: short, stable, unambiguous general-knowledge facts, each with its
 * accepted answers (the first is the canonical one, the rest aliases). Matching is normalised (see score.ts).
 *
 * Licence: written for Distillery by its authors and released under the project's MIT licence; no third-party
 * data set was copied.
 */
export interface Fact {
  id: string;
  question: string;
  answers: string[];
  /** 1 = very common knowledge, 2 = common, 3 = less common. */
  difficulty: 1 | 2 | 3;
}

const F = (id: string, difficulty: 1 | 2 | 3, question: string, ...answers: string[]): Fact => ({ id: `qa-${id}`, question, answers, difficulty });

export const FACTS: readonly Fact[] = [
  F('capital-france', 1, 'What is the capital of France?', 'Paris'),
  F('capital-japan', 1, 'What is the capital of Japan?', 'Tokyo'),
  F('capital-italy', 1, 'What is the capital of Italy?', 'Rome', 'Roma'),
  F('capital-egypt', 2, 'What is the capital of Egypt?', 'Cairo'),
  F('capital-canada', 2, 'What is the capital of Canada?', 'Ottawa'),
  F('capital-australia', 2, 'What is the capital of Australia?', 'Canberra'),
  F('capital-kenya', 3, 'What is the capital of Kenya?', 'Nairobi'),
  F('capital-peru', 3, 'What is the capital of Peru?', 'Lima'),
  F('largest-planet', 1, 'What is the largest planet in the Solar System?', 'Jupiter'),
  F('red-planet', 1, 'Which planet is known as the Red Planet?', 'Mars'),
  F('solar-star', 1, 'What star is at the centre of the Solar System?', 'the Sun', 'Sun', 'Sol'),
  F('earth-satellite', 1, 'What is the name of the natural satellite of the Earth?', 'the Moon', 'Moon', 'Luna'),
  F('water-formula', 1, 'What is the chemical formula of water?', 'H2O', 'H₂O'),
  F('symbol-gold', 2, 'What is the chemical symbol for gold?', 'Au'),
  F('symbol-iron', 2, 'What is the chemical symbol for iron?', 'Fe'),
  F('symbol-sodium', 3, 'What is the chemical symbol for sodium?', 'Na'),
  F('gas-plants', 2, 'Which gas do plants take in from the air for photosynthesis?', 'carbon dioxide', 'CO2', 'CO₂'),
  F('boiling-water', 1, 'At how many degrees Celsius does water boil at sea level?', '100', 'one hundred', '100 degrees', '100 °C', '100°C'),
  F('freezing-water', 1, 'At how many degrees Celsius does water freeze?', '0', 'zero', '0 degrees', '0 °C', '0°C'),
  F('legs-spider', 1, 'How many legs does a spider have?', '8', 'eight'),
  F('legs-insect', 2, 'How many legs does an insect have?', '6', 'six'),
  F('days-week', 1, 'How many days are there in a week?', '7', 'seven'),
  F('days-leap', 2, 'How many days are there in a leap year?', '366', 'three hundred sixty-six', 'three hundred and sixty-six'),
  F('continents', 2, 'How many continents are there on Earth, by the most common count?', '7', 'seven'),
  F('largest-ocean', 1, 'What is the largest ocean on Earth?', 'the Pacific Ocean', 'Pacific', 'Pacific Ocean'),
  F('longest-river-sa', 2, 'Which river flows through the Amazon rainforest?', 'the Amazon', 'Amazon', 'Amazon River'),
  F('highest-mountain', 1, 'What is the highest mountain on Earth above sea level?', 'Mount Everest', 'Everest', 'Mt Everest', 'Mt. Everest', 'Chomolungma', 'Sagarmatha'),
  F('romeo-author', 1, 'Who wrote the play Romeo and Juliet?', 'William Shakespeare', 'Shakespeare'),
  F('mona-lisa', 1, 'Who painted the Mona Lisa?', 'Leonardo da Vinci', 'Leonardo', 'da Vinci'),
  F('relativity', 1, 'Which physicist developed the theory of relativity?', 'Albert Einstein', 'Einstein'),
  F('gravity-apple', 2, 'Which English scientist formulated the law of universal gravitation in the 17th century?', 'Isaac Newton', 'Newton', 'Sir Isaac Newton'),
  F('evolution', 2, 'Who proposed the theory of evolution by natural selection in On the Origin of Species?', 'Charles Darwin', 'Darwin'),
  F('penicillin', 3, 'Who discovered penicillin in 1928?', 'Alexander Fleming', 'Fleming', 'Sir Alexander Fleming'),
  F('first-moon', 2, 'Who was the first person to walk on the Moon?', 'Neil Armstrong', 'Armstrong'),
  F('ww2-end', 2, 'In what year did the Second World War end?', '1945'),
  F('hardest-natural', 2, 'What is the hardest naturally occurring material?', 'diamond', 'diamonds'),
  F('largest-mammal', 2, 'What is the largest animal that has ever lived?', 'the blue whale', 'blue whale'),
  F('fastest-land', 2, 'What is the fastest land animal?', 'the cheetah', 'cheetah'),
  F('bee-product', 1, 'What sweet food do bees make?', 'honey'),
  F('primary-blue-yellow', 1, 'What colour do you get by mixing blue and yellow paint?', 'green'),
  F('sky-colour', 1, 'What colour is a clear daytime sky?', 'blue'),
  F('triangle-sides', 1, 'How many sides does a triangle have?', '3', 'three'),
  F('hexagon-sides', 2, 'How many sides does a hexagon have?', '6', 'six'),
  F('right-angle', 2, 'How many degrees are there in a right angle?', '90', 'ninety', '90 degrees'),
  F('pi-digits', 2, 'What is the value of pi rounded to two decimal places?', '3.14'),
  F('square-root-81', 1, 'What is the square root of 81?', '9', 'nine'),
  F('binary-two', 3, 'What is the number 2 written in binary?', '10'),
  F('largest-country', 2, 'What is the largest country in the world by area?', 'Russia', 'the Russian Federation', 'Russian Federation'),
  F('great-wall', 1, 'In which country is the Great Wall?', 'China', "People's Republic of China"),
  F('euro-germany', 2, 'What currency is used in Germany?', 'the euro', 'euro', 'euros', 'EUR', '€'),
  F('language-brazil', 2, 'What is the official language of Brazil?', 'Portuguese'),
  F('human-heart', 3, 'How many chambers does the human heart have?', '4', 'four'),
];
