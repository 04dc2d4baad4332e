export interface Greeting {
  text: string;
  lang: 'en' | 'fr';
}

export const greeting: Greeting = { text: 'hello from typescript', lang: 'en' };
